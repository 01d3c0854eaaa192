"""The only package that imports torch or nerfstudio. Built in the NeRF issue."""
