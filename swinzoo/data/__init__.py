"""Package data: map22kto1k.txt."""
