"""The data layer, one room per concern: ``io`` (media), ``readers`` (annotation files), ``registry``
(datasets by name), ``datasets`` (Datasets, DataModules, transforms), ``synthetic`` (generated sets),
``tools`` (the ``xmkd data`` tools). Lower rooms never import higher ones."""
