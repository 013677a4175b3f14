"""LightningDataModules for the data sets prunelab experiments on."""

from prunelab.data.common import example_input
from prunelab.data.imdb import PAD_ID, IMDBDataModule
from prunelab.data.mnist import MNISTDataModule

__all__ = ["PAD_ID", "IMDBDataModule", "MNISTDataModule", "example_input"]
