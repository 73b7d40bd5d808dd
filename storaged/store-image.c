/* store-image.c: being written */
