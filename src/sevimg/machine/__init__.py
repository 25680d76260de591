"""This machine: doctor, and booting built images under QEMU."""
