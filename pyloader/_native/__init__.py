"""The native path: which datasets may take it, their columns and file formats, the
iterator over the C++ pipeline, native collation, pinned and device staging, fork safety
and thread workers."""
