"""Hugging Face format: ``motlab export`` writes a trained model as a transformers checkpoint,
and :func:`motlab.load_model` and ``model.init_from`` read one back.

Reading needs only safetensors (:mod:`motlab.hf.files`, :mod:`motlab.hf.gpt2`); writing needs
transformers (the ``hf`` extra), imported only by ``motlab export``. ``configuration`` and
``modeling`` are the sources of the remote code an export ships (:mod:`motlab.hf.bundle`), so
they import only torch, transformers and motlab's model.
"""
