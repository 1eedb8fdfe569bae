"""``manage.py authkit_encrypt``: ``authkit encrypt`` on the storage of the Django settings."""

from authkit.contrib.django._commands import MaintenanceCommand


class Command(MaintenanceCommand):
    command = "encrypt"
