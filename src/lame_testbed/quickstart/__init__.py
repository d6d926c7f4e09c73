"""`lame quickstart`: LaME against its peers on the offline digits benchmark, on a CPU."""
