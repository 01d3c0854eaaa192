"""Pure math over arrays: camera models, Lie groups, alignment, two-view geometry, PnP,
triangulation, bundle adjustment and trajectory metrics.

Import the submodules directly (``from geometry.camera_models import project``); nothing is
imported here so that ``import geometry`` stays cheap and has no side effects.
"""
