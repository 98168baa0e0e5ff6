"""Training methods: one paper, one file. Select with ``method=<name>`` (conf/method/<name>.yaml)."""

from snnexp.methods.ann import ANN
from snnexp.methods.contrastive import Contrastive
from snnexp.methods.dspike import Dspike
from snnexp.methods.enof import EnOF
from snnexp.methods.imloss import IMLoss
from snnexp.methods.kd import KD
from snnexp.methods.mtt import MTT
from snnexp.methods.sdt import SDT
from snnexp.methods.shortcut import Shortcut
from snnexp.methods.sml import SML
from snnexp.methods.tdbn import TDBN
from snnexp.methods.tet import TET

__all__ = ["ANN", "Contrastive", "Dspike", "EnOF", "IMLoss", "KD", "MTT", "SDT", "SML", "Shortcut", "TDBN", "TET"]
