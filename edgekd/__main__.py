from edgekd.cli import main

if __name__ == "__main__":  # `python -m edgekd`; importing this module (doctest collection) runs nothing
    main()
