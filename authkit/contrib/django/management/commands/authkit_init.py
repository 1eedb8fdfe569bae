"""``manage.py authkit_init``: ``authkit init`` on the storage of the Django settings."""

from authkit.contrib.django._commands import MaintenanceCommand


class Command(MaintenanceCommand):
    command = "init"
