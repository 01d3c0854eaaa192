"""Monocular visual SLAM (frontend, map, local BA, loop closure). Built in the SLAM issue."""
