/* store-verify.c: being written */
