"""Synthetic RGB-D scene generation and the on-disk dataset layout (see :mod:`instseg_ros.data.io`)."""

from instseg_ros.data.io import list_frames, list_sequences, load_frame, load_sequence, sample_root  # noqa: E402,F401
