"""Training of InfinityGAN models from a folder of images.

May import `engine.model`; never imports Qt or `app`.
"""
