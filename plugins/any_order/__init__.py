"""The any-order family: the capability contract of any-order networks, the base of any-order objectives (OA-ARDM,
LO-ARM, ...), and the ``anyorder orders``, ``compress`` and ``decompress`` commands."""
