"""Training methods: one paper, one file. Select with ``method=<name>`` (conf/method/<name>.yaml)."""

from snnexp.methods.ann import ANN
from snnexp.methods.base import Method
from snnexp.methods.dspike import Dspike
from snnexp.methods.imloss import IMLoss
from snnexp.methods.mtt import MTT
from snnexp.methods.sdt import SDT
from snnexp.methods.tdbn import TDBN
from snnexp.methods.tet import TET

__all__ = ["ANN", "Dspike", "IMLoss", "MTT", "Method", "SDT", "TDBN", "TET"]
