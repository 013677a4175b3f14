"""LightningDataModules: the two built-in data sets, and generic ones for your own files."""

from prunelab.data.common import example_input
from prunelab.data.images import ImageFolderDataModule, TorchvisionDataModule
from prunelab.data.imdb import PAD_ID, IMDBDataModule
from prunelab.data.mnist import MNISTDataModule
from prunelab.data.text_files import TextFilesDataModule

__all__ = ["PAD_ID", "IMDBDataModule", "ImageFolderDataModule", "MNISTDataModule",
           "TextFilesDataModule", "TorchvisionDataModule", "example_input"]
