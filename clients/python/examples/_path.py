"""Lets the examples run from a source checkout without installing the
package (an installed `stepdb` is used when there is one)."""
import os
import sys

try:
    import stepdb  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
