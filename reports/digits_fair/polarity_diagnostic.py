"""Where a trained model's predictions on OfflineDigits go: accuracy per environment,
on images whose centre is lighter than their border (a light stroke on a dark ground,
as in MNIST) and on the others, on inverted and on grey inputs, and the count of each
predicted class.

    python reports/digits_fair/polarity_diagnostic.py MODEL_PKL DATA_DIR

MODEL_PKL is the ``model.pkl`` train.py writes at the end of a run (not committed);
DATA_DIR the ``--data_dir`` that holds OfflineDigits.
"""

import sys

import numpy as np
import torch
from domainbed import algorithms, hparams_registry

from domainbed_dge.plugin.data_guard import DIGITS_ENVIRONMENTS, digits_files

LUMA = np.array([0.299, 0.587, 0.114])


def predictions(algorithm, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([algorithm.predict(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)]).numpy()


def main(model_pkl: str, data_dir: str) -> None:
    saved = torch.load(model_pkl, weights_only=False)
    name, dataset = saved["args"]["algorithm"], saved["args"]["dataset"]
    # Hyperparameters added after the run was saved take their defaults (they change training only).
    hparams = {**hparams_registry.default_hparams(name, dataset), **saved["model_hparams"]}
    algorithm = algorithms.get_algorithm_class(name)(
        saved["model_input_shape"], saved["model_num_classes"], saved["model_num_domains"], hparams)
    # Keys the saved model has beyond a fresh one are state made while training (Fish's
    # inner copy of the network); predict() reads none of them. A missing key is an error.
    loaded = algorithm.load_state_dict(saved["model_dict"], strict=False)
    if loaded.missing_keys:
        raise RuntimeError(f"{model_pkl} lacks {loaded.missing_keys} of a fresh {name}")
    algorithm.eval()
    for environment in DIGITS_ENVIRONMENTS:
        images_file, labels_file = digits_files(data_dir, environment)
        images, labels = np.load(images_file), np.load(labels_file)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        predicted = predictions(algorithm, x)
        correct = predicted == labels
        luma = images.astype(float) @ LUMA / 255
        border = np.concatenate([luma[:, :3].reshape(len(luma), -1), luma[:, -3:].reshape(len(luma), -1),
                                 luma[:, :, :3].reshape(len(luma), -1), luma[:, :, -3:].reshape(len(luma), -1)], 1)
        light = luma.mean((1, 2)) > border.mean(1)
        dark = f"{correct[~light].mean():.3f}" if (~light).any() else "-"
        print(f"{environment}: accuracy {correct.mean():.3f}; light stroke on dark ({light.mean():.2f} of the images) "
              f"{correct[light].mean():.3f}, dark on light {dark}; inverted {np.mean(predictions(algorithm, 1 - x) == labels):.3f}; "
              f"grey {np.mean(predictions(algorithm, x.mean(1, keepdim=True).expand_as(x)) == labels):.3f}; "
              f"predicted classes {np.bincount(predicted, minlength=10).tolist()}")


if __name__ == "__main__":
    main(*sys.argv[1:])
