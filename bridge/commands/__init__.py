"""Commands back to the PBX: one normalised API in front of every vendor's own.

``actions`` is the catalogue of normalised actions and their arguments; ``model`` the values a
command passes through (the request an adapter builds, the answer it reads); one adapter per
vendor (``coral``, ``oncall``, ``coocenter``, ``callog``, and ``ccm`` for provisioning) is a
pure function each way; ``driver`` sends, ``service`` makes every command durable and
idempotent, ``repair`` folds what the query APIs say back into the calls.
"""
