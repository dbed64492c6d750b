"""vshx: a virsh-like shell for shortening qcow2 backing chains without losing a byte."""

__version__ = "0.1.0"
