"""``python -m recursionlab ...`` and the ``recursionlab`` command.

``course DIR`` (copy the lessons into a folder, see :mod:`recursionlab.course.files`) belongs to the course layer;
every other verb is the training CLI's (:mod:`recursionlab.train.cli`), which may not import the course layer.
"""

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``course`` to the course layer and everything else to the training CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["course"]:
        from recursionlab.course.files import main as course_main

        return course_main(argv[1:])
    from recursionlab.train.cli import main as train_main

    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
