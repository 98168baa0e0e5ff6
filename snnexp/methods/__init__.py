"""Training methods: one paper, one file. Select with ``method=<name>`` (conf/method/<name>.yaml)."""

from snnexp.methods.ann import ANN
from snnexp.methods.base import Method
from snnexp.methods.dspike import Dspike
from snnexp.methods.imloss import IMLoss
from snnexp.methods.sdt import SDT
from snnexp.methods.tet import TET

__all__ = ["ANN", "Dspike", "IMLoss", "Method", "SDT", "TET"]
