"""The scientific tasks as libraries with public names: :mod:`.teacher_student` (docs/science.md §1-3) and
:mod:`.chains` (docs/science.md §5). Experiments are presets over these."""
