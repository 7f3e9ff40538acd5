"""A file with imports and no loss function."""
import torch
