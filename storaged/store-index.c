/* store-index.c: being written */
