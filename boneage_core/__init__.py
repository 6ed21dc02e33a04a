"""boneage_core: bone age estimation from pediatric left-hand radiographs."""

__version__ = "0.1.0"
