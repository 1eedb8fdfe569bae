"""A minimal Django project on authkit sessions and the shared Salesforce client."""
