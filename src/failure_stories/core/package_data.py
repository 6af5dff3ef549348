"""What a wheel carries besides the code: the checkout's top-level folders, copied
into the package's ``_data/`` folder by the build hook in ``setup.py`` (which loads
this file by its path, before the package can be imported)."""

DATA_PACKAGE_DIR = "_data"
DATA_FOLDERS = ("scenarios", "images", "operator", "kind-configs", "build")
DATA_FILES = ("requirements.lock",)
