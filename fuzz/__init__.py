"""Fuzz targets for rtp2ws (atheris/libFuzzer); see fuzz/README.md."""
