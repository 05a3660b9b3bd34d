"""airgap: carry Cisco and F5 licensing across an air gap as signed, schema-checked bundles."""

__version__ = "0.1.0"
