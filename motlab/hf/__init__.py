"""Hugging Face format: ``motlab export`` writes a trained model as a transformers checkpoint,
and :func:`motlab.load_model` and ``model.init_from`` read one back.

Nothing here is imported by ``import motlab``: ``configuration`` and ``modeling`` need
transformers (the ``hf`` extra), and they are the sources of the remote code an export ships
(:mod:`motlab.hf.bundle`), so they import only torch, transformers and motlab's model.
"""
