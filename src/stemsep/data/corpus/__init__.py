"""Songs on disk: the layouts of multitrack datasets (``layouts``), the synthetic corpus (``synth``),
activity profiles (``activity``). Imports no other part of ``stemsep.data``."""
