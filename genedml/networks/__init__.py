"""Trainable networks (``nn.Module``) on cached features, one module per network or shared part:

- ``blocks``: attention and pre-norm transformer layers.
- ``context``: the neighbour and global encoders.
- ``pathway``: the image pathway shared by Gene-DML and TRIPLEX.
- ``input_norm``: input normalisation of the cached features (layer | standard | none).
- ``losses``: the losses of every network (contrastive, grouping, distillation).
- ``gene_dml_net``: Gene-DML.
- ``triplex_net``: TRIPLEX-style.
- ``dkan_net``: DKAN-style.
- ``bleep_net``: BLEEP-style (and its nearest-reference prediction).
- ``stnet_net``: ST-Net-style.
"""
