"""TensorFlow loader.

    >>> import kaokore.tensorflow
    >>> ds = kaokore.tensorflow.load("kaokore", split="train", category="status")
    >>> ds = ds.shuffle(4096).batch(64).prefetch(tf.data.AUTOTUNE)

TensorFlow is imported only when `load` is called, so this module imports without it.
"""
from __future__ import annotations

import os

from .dataset.attributes import Attributes, export_row
from .offline.index import MissingFramework, MissingImagesWarning, read_index
from .pipeline.normalize import SIZE


def _import_tensorflow():
    try:
        import tensorflow as tf
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "tensorflow":
            raise  # TensorFlow is there but broken: its own error says more than ours would
        raise MissingFramework(
            "kaokore.tensorflow needs TensorFlow: pip install 'kaokore[tensorflow]' "
            "(or pip install tensorflow-cpu)") from None
    return tf


def load(root: str | os.PathLike, split: str = "train", category: str = "gender", attributes: bool = False):
    """The labelled images of one split as a `tf.data.Dataset`, in image-number order.

    Images are decoded by `tf.io.decode_jpeg` in a parallel, order-preserving map;
    shuffle, batch and prefetch as usual. Labelled images missing from disk are left
    out and reported in one `MissingImagesWarning`.

    Parameters
    ----------
    root : str or os.PathLike
        A directory written by `kaokore download`, in any layout.
    split : str
        "train", "dev" or "test".
    category : str
        The label: "gender" or "status" (labels.csv), or a closed set of
        original_tags.txt: "orientation", "holder" or "fine_status".
    attributes : bool
        Add a third element: a dict of the image's original_tags.txt attributes in
        English as string and int64 scalars (tags joined by ';', unknown years 0, as
        in attributes.csv).

    Returns
    -------
    tf.data.Dataset
        Elements (uint8 [256, 256, 3] image, int64 label), or with `attributes`
        (image, label, dict). It carries `class_names` and `file_paths` (as Keras'
        `image_dataset_from_directory` does); both are lost by later transformations
        such as `.batch`.

    Raises
    ------
    MissingFramework
        TensorFlow is not installed.
    UsageError
        An unknown split or category.
    DirectoryError
        `root` is not a directory, or holds none of the split's labelled images.
    MetadataError
        A metadata file under `root` is missing or malformed.

    Examples
    --------
    >>> import kaokore.tensorflow
    >>> ds = kaokore.tensorflow.load("data", split="train", category="status")
    >>> ds.class_names
    """
    tf = _import_tensorflow()
    index = read_index(root, split, category, attributes=attributes)
    index.warn_missing(stacklevel=2)
    paths, labels = [path for path, _ in index.samples], [label for _, label in index.samples]

    ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, dtype=tf.string),
                                             tf.constant(labels, dtype=tf.int64)))
    ds = ds.map(_decoder(tf), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if attributes:
        ds = tf.data.Dataset.zip((ds, _attribute_columns(tf, index.attributes))).map(
            lambda pair, extra: (pair[0], pair[1], extra))
    ds.class_names = list(index.classes)
    ds.file_paths = paths
    return ds


def _decoder(tf):
    def decode(path, label):
        # INTEGER_ACCURATE is libjpeg's ISLOW, which Pillow uses: both loaders see the same pixels.
        # (TensorFlow's default, INTEGER_FAST, is off by a level or two in many pixels.)
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE")
        # A file that is not 256x256 fails here, by name of the op, rather than later in a batch.
        return tf.ensure_shape(image, (*SIZE, 3)), label

    return decode


def _attribute_columns(tf, attributes: tuple[dict, ...]):
    """Each sample's attributes as attributes.csv writes them, one tensor a column."""
    rows = [{"name": a["name"], **export_row(Attributes(**{k: v for k, v in a.items() if k != "name"}))}
            for a in attributes]
    columns = {k: tf.constant([r[k] for r in rows], dtype=tf.int64 if k.startswith("year_") else tf.string)
               for k in (rows[0] if rows else {"name": ""})}
    return tf.data.Dataset.from_tensor_slices(columns)

__all__ = ["load", "MissingFramework", "MissingImagesWarning"]
