"""The online ranking service: FastAPI app, Feast sequence reads and serving-bundle loading."""
