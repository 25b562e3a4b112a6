"""Build hook: the wheel carries the course (notebooks/, exercises/, docs/) as ``recursionlab/course_files/``.

Everything else is in pyproject.toml. ``recursionlab course DIR`` copies these folders out again; an editable
install (``pip install -e .``) copies nothing and the command reads the checkout's folders instead.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

COURSE_FOLDERS = ("notebooks", "exercises", "docs")  # kept equal to recursionlab.course.files.COURSE_FOLDERS


class BuildPyWithCourse(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        here = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "recursionlab" / "course_files"
        for name in COURSE_FOLDERS:
            if not (here / name).is_dir():
                raise FileNotFoundError(f"{here / name} is missing: the wheel must carry the course's {name}/")
            shutil.copytree(here / name, target / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithCourse})
