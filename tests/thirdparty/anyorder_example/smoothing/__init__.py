"""The ``smoother`` plugin kind, declared by this distribution: how bag_of_tokens softens its training targets."""
