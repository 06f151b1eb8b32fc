"""Package data: map22kto1k.txt (the official 22k -> 1k head map), imagenet1k_classes.txt (the 1000 ImageNet-1k
class names in class-index order, one a line, as torchvision names them), and the nano models' weights."""
