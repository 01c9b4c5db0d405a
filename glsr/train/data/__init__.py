"""The data readers of training and evaluation, in parts: ``splits`` (where each distributed data set keeps its
faces and which split they belong to), ``annotations`` (format tables, :class:`FaceRecord`, errors, file parsers)
and ``readers`` (one reader per data set). The entry points and the torch dataset are in
:mod:`glsr.train.datasets`, which re-exports all of it."""
