"""Transport: routes, request/response models, dependencies, errors to HTTP."""
