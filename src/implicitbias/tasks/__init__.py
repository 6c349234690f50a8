"""The scientific tasks as libraries with public names: :mod:`.teacher_student` (SPEC §1-3) and
:mod:`.chains` (SPEC §5). Experiments are presets over these."""
