"""The MNQ trading environment (gymnasium) and its reward shaping."""
