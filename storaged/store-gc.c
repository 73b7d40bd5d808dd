/* store-gc.c: being written */
