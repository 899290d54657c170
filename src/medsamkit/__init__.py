"""medsamkit: Segment-Anything-family models for medical image segmentation.

Importing the package has no side effects: no model is built, no file is read and no
weights are fetched until a function asks for them.
"""

__version__ = "0.1.0"
