"""``python -m service.cli``: how ``serve`` starts its helpers."""
import sys

from service.cli import main

sys.exit(main())
