"""What every part of the project assumes about an MNIST image: its size, its classes, its normalisation."""

IMAGE_SIZE = 28  # pixels, square, one grey channel
NUM_CLASSES = 10  # the digits 0-9
DIGITS = tuple(str(digit) for digit in range(NUM_CLASSES))  # MNIST's class names
PIXEL_MEAN = 0.5  # the chapter's Normalize(0.5, 0.5): [0, 1] pixels to [-1, 1]
PIXEL_STD = 0.5
