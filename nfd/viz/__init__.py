"""Visualisation: from sampled functions to pictures.

Modules:
  ``preview``    image tiles of samples (training previews, figure grids)
  ``mesh``       marching cubes of sampled occupancy grids (``nfd mesh``)
  ``render``     offscreen rendering of meshes (``nfd render``)
  ``gl``         which offscreen backend renders (EGL, OSMesa or matplotlib), chosen once per process
  ``figures``    the paper's figures from samples and renders (``nfd figure``)
  ``selection``  automatic choice of the samples a figure shows
"""
