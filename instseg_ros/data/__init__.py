"""Synthetic RGB-D scene generation and the on-disk dataset layout (see :mod:`instseg_ros.data.io`)."""
