"""nfd: generative models as distributions of functions (Dupont, Teh, Doucet), resolution-independent."""

__version__ = "0.1.0"
